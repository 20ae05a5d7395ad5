"""Generated stubs for the `paygate.v1` protobuf package (see scripts/gen_protos.py; never edit by hand)."""
