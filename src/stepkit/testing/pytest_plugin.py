"""pytest plugin of the stepkit conformance kit."""
