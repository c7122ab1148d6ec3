"""``python -m lape_utils`` is the ``lape`` command."""

from .cli import main

raise SystemExit(main())
