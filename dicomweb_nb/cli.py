"""``dicomweb-nb``: serve a store over DICOMweb, import files into it, preload sample studies."""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from .workspace import DEFAULT_STORE_DIRNAME, INDEX_FILENAME, STORE_ENV, TOKEN_ENV

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "ip6-localhost"}


def default_store() -> str:
    return os.environ.get(STORE_ENV, DEFAULT_STORE_DIRNAME)


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _config_from_args(args: argparse.Namespace):
    from traitlets.config import Config
    from traitlets.config.loader import JSONFileConfigLoader, PyFileConfigLoader

    from .server.config import DicomWeb

    cfg = Config()
    if args.config:
        path = Path(args.config)
        loader_cls = JSONFileConfigLoader if path.suffix == ".json" else PyFileConfigLoader
        cfg.merge(loader_cls(path.name, path=str(path.parent.resolve())).load_config())
    for item in args.option or []:
        if "=" not in item:
            raise SystemExit(f"error: -c expects NAME=VALUE (a c.DicomWeb option), got {item!r}")
        name, value = item.split("=", 1)
        name = name.removeprefix("DicomWeb.").removeprefix("c.DicomWeb.")
        if name not in DicomWeb.class_trait_names(config=True):
            raise SystemExit(f"error: unknown option {name!r}; see `dicomweb-nb serve --help-options`")
        try:
            cfg.DicomWeb[name] = json.loads(value)
        except json.JSONDecodeError:
            cfg.DicomWeb[name] = value
    return DicomWeb(config=cfg)


def cmd_serve(args: argparse.Namespace) -> int:
    import tornado.ioloop

    from .server.app import close_context, make_app, make_http_server

    if args.help_options:
        from .server.config import DicomWeb

        print(DicomWeb.class_get_help())
        return 0
    basic = None
    if args.basic_auth:
        user, sep, password = args.basic_auth.partition(":")
        if not sep or not user:
            raise SystemExit("error: --basic-auth expects USER:PASSWORD")
        basic = (user, password)
    token = args.token or os.environ.get(TOKEN_ENV) or None
    if not _is_loopback(args.host) and token is None and basic is None and not args.allow_unauthenticated:
        print(
            f"error: refusing to serve on {args.host} without authentication: anyone on the network could read "
            "and write the store. Give --token or --basic-auth, or --allow-unauthenticated if you mean it.",
            file=sys.stderr,
        )
        return 2
    config = _config_from_args(args)
    if args.database:
        config.database_url = args.database
    if args.storage:
        config.storage_url = args.storage
    logging.basicConfig(
        level=logging.INFO if not args.quiet else logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    from .errors import ConfigurationError

    try:
        app = make_app(args.store, config, auth_token=token, basic_auth=basic)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    server = make_http_server(app, config)
    server.listen(args.port, address=args.host)
    ctx = app.settings["dicomweb"]
    counts = ctx.store.counts()
    print(f"dicomweb-nb serving {ctx.store.location} ({counts['studies']} studies, {counts['instances']} instances)", flush=True)
    print(f"  DICOMweb: http://{args.host}:{args.port}{ctx.root_path}", flush=True)
    if config.enable_wado:
        print(f"  WADO-URI: http://{args.host}:{args.port}{ctx.wado_path}", flush=True)
    loop = tornado.ioloop.IOLoop.current()

    def stop(*_: object) -> None:
        loop.add_callback_from_signal(loop.stop)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    loop.start()
    server.stop()
    close_context(ctx)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .store import import_paths

    store = _open_store(args)
    try:
        report = import_paths(store, args.paths, progress=not args.quiet)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"imported {len(report.stored)} instance(s) into {store.location}")
    if report.skipped:
        print(f"skipped {len(report.skipped)} file(s):")
        for path, reason in report.skipped:
            print(f"  {path}: {reason}")
    return 0


def cmd_samples(args: argparse.Namespace) -> int:
    from . import samples
    from .store import import_paths

    store = _open_store(args)
    if store.counts()["instances"] and not args.force:
        print(f"{store.location} already holds studies; leaving it as it is (--force to add the samples again)")
        return 0
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        generated = samples.write_series(list(samples.iter_sample_datasets()), tmp)
        report = import_paths(store, [*samples.pydicom_test_files(), *generated], progress=not args.quiet)
    counts = store.counts()
    print(f"{store.location}: {counts['studies']} studies, {counts['series']} series, {counts['instances']} instances"
          f" ({len(report.skipped)} file(s) skipped)")
    return 0


def _open_store(args: argparse.Namespace):
    """The store of ``--store`` (and ``--database`` / ``--storage``, else the team store the folder names)."""
    from .store import Store
    from .store.store import workspace_store_options

    options = workspace_store_options(args.store)
    if args.database:
        options["database"] = args.database
    if args.storage:
        options["storage"] = args.storage
    return Store(args.store, **options)


def _team_store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database",
        metavar="URL",
        help="index of a team store: postgresql://user@host/db or sqlite:////absolute/path "
        f"(c.DicomWeb.database_url; default: {INDEX_FILENAME} in the store folder)",
    )
    parser.add_argument("--storage", metavar="URL", help="where instances are kept: a folder or s3://bucket/prefix "
                        "(c.DicomWeb.storage_url; default: files/ in the store folder)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicomweb-nb", description="DICOMweb for Jupyter: serve, import, samples.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve a store over DICOMweb (QIDO-RS, WADO-RS, STOW-RS, WADO-URI)")
    serve.add_argument(
        "--store", default=default_store(), help=f"store folder (default: {DEFAULT_STORE_DIRNAME}, or ${STORE_ENV})"
    )
    _team_store_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8042, help="port (default 8042, Orthanc's)")
    serve.add_argument("--token", help=f"require 'Authorization: Bearer <token>' (or ${TOKEN_ENV})")
    serve.add_argument("--basic-auth", metavar="USER:PASSWORD", help="require HTTP basic authentication")
    serve.add_argument("--allow-unauthenticated", action="store_true", help="allow a non-loopback bind without authentication")
    serve.add_argument("--config", help="a traitlets config file (.py or .json) with c.DicomWeb options")
    serve.add_argument("-c", dest="option", action="append", metavar="NAME=VALUE", help="set one c.DicomWeb option (repeatable)")
    serve.add_argument("--help-options", action="store_true", help="list the c.DicomWeb options and exit")
    serve.add_argument("--quiet", action="store_true")
    serve.set_defaults(func=cmd_serve)

    imp = sub.add_parser("import", help="import DICOM files and folders into a store (non-DICOM files are skipped)")
    imp.add_argument("paths", nargs="+")
    imp.add_argument("--store", default=default_store())
    _team_store_arguments(imp)
    imp.add_argument("--quiet", action="store_true")
    imp.set_defaults(func=cmd_import)

    smp = sub.add_parser("samples", help="preload a store with sample studies (pydicom's test files, generated CT/MR)")
    smp.add_argument("--store", default=default_store())
    _team_store_arguments(smp)
    smp.add_argument("--force", action="store_true", help="add the samples even if the store is not empty")
    smp.add_argument("--quiet", action="store_true")
    smp.set_defaults(func=cmd_samples)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
