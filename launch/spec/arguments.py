"""The command-line arguments that name a spec, shared by every command that reads one."""
import argparse


def add_spec_args(parser: argparse.ArgumentParser, *, default_spec: str | None = None) -> None:
    parser.add_argument("spec", nargs="?" if default_spec else None, default=default_spec,
                        help="path of a YAML job spec, e.g. configs/quickstart.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override one spec value (repeatable); VALUE is read as a YAML scalar, "
                             "e.g. --set train.lr=1e-3 --set distributed.num_workers=1")
