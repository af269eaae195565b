"""Workers: run one benchmark job on one device and write its records to the results store."""
