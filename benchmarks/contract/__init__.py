"""An independent probe of amp-tf's input contract (issue 30): `python -m benchmarks.contract.probe`."""
