"""One module per ``distlg`` subcommand; each defines HELP, ``arguments(parser)`` and
``run(args) -> exit status``. ``distlg.cli`` lists them in ``COMMANDS``.

It may import: every room (``distlg.data``, ``distlg.nn``, ``distlg.modeldir``,
``distlg.rendering``, ``distlg.training``, ``distlg.viewer``) and the ground-floor helpers,
heavy ones (torch, the trainer, model directories, the web server) inside ``run`` only, so
that ``distlg --help`` loads no torch (``tests/test_layout.py`` checks it in a fresh
interpreter).
"""
