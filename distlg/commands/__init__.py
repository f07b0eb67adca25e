"""One module per ``distlg`` subcommand; each defines HELP, ``arguments(parser)`` and
``run(args) -> exit status``. ``distlg.cli`` lists them in ``COMMANDS``.

A command may import any room; heavy imports (torch, the trainer) happen inside ``run`` so that
``distlg --help`` stays quick.
"""
