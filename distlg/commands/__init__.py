"""One module per ``distlg`` subcommand; each defines HELP, ``arguments(parser)`` and
``run(args) -> exit status``. ``distlg.cli`` lists them in ``COMMANDS``."""
