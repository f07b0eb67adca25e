import sys
from pathlib import Path

# The fault suite shares the small models of the test suite one folder up (tests/modelkit.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
