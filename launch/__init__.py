"""The job spec, the command line, and turning a spec into a Ray job."""
