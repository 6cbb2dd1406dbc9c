"""rmq_cli: the ``rmq`` command line (``rmq bench store`` today; nameserver, broker and client benchmarks later)."""
