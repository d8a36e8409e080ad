"""The chatstep command-line interface (see :mod:`chatstep.cli.app`)."""
