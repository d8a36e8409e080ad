"""``python -m chatstep``."""

from chatstep.cli.app import main

main()
