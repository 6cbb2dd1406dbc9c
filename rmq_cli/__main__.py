"""Lets ``python -m rmq_cli ...`` behave exactly like the installed ``rmq`` console script."""

from rmq_cli.main import main

raise SystemExit(main())
