"""Generated stubs for the `paygate.v1` protobuf package (see paygate/protogen.py; never edit by hand)."""
