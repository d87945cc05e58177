"""`python -m agentpool` runs the CLI."""

from agentpool.cli import main

raise SystemExit(main())
