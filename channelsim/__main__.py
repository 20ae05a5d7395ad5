"""`python -m channelsim ...`: the channel-sim command on its own."""

from __future__ import annotations

from channelsim.cli import main

raise SystemExit(main())
