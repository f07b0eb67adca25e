"""Audio: .wav files (PCM or float), memory-mapped where scipy can: audio (t)."""

from __future__ import annotations

from pathlib import Path

from .base import IngestError, Source, SourceOptions, array_source, choose_kind, first_line, identity


def open_wav(path: Path, options: SourceOptions) -> Source:
    from scipy.io import wavfile

    choose_kind(options.kind, ("audio",), str(path))
    try:
        rate, data = wavfile.read(path, mmap=True)
    except ValueError as exc:
        if "24-bit" not in str(exc):
            raise IngestError(f"{path}: not a readable WAV file ({first_line(exc)})") from None
        rate, data = wavfile.read(path)  # 24-bit samples cannot be memory-mapped
    except Exception as exc:  # truncated or foreign files raise struct/OS errors
        raise IngestError(f"{path}: not a readable WAV file ({first_line(exc)})") from None
    return array_source(str(path), path.stat().st_size, "audio", data, identity(path),
                        {"sample_rate": int(rate)})
