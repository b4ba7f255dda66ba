"""``python -m scgpcl``: the same as the ``scgpcl`` command (:func:`scgpcl.cli.main`)."""

from .cli import main

raise SystemExit(main())
