"""``dicomweb-nb``: serve a store over DICOMweb, import files into it, preload sample studies, copy it
into another (``migrate``)."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import os
import shutil
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
    from traitlets import TraitError
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
    try:
        return DicomWeb(config=cfg)
    except (TraitError, ValueError) as exc:  # a value of the wrong type, or refused by the option's check
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(args: argparse.Namespace) -> int:
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
    from .server.workers import default_workers, workers_supported

    workers = default_workers() if args.workers is None else args.workers
    if workers < 1:
        raise SystemExit("error: --workers must be at least 1")
    if workers > 1 and not workers_supported():
        print("warning: worker processes need fork(2), which this platform lacks; serving with one process", file=sys.stderr)
        workers = 1
    config = _config_from_args(args)
    if args.database:
        config.database_url = args.database
    if args.storage:
        config.storage_url = args.storage
    logging.basicConfig(
        level=logging.INFO if not args.quiet else logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    if workers > 1:
        return _serve_workers(args, config, workers, token, basic)
    return _serve_one_process(args, config, token, basic)


def _serve_one_process(args: argparse.Namespace, config, token: str | None, basic: tuple[str, str] | None) -> int:
    import tornado.ioloop

    from .errors import ConfigurationError
    from .server.app import close_context, make_app, make_http_server

    try:
        app = make_app(args.store, config, auth_token=token, basic_auth=basic)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    server = make_http_server(app, config)
    server.listen(args.port, address=args.host)
    ctx = app.settings["dicomweb"]
    _print_serving(args, config, ctx.store.location, ctx.store.counts(), ctx.root_path, ctx.wado_path, 1)
    loop = tornado.ioloop.IOLoop.current()

    def stop(*_: object) -> None:
        loop.add_callback_from_signal(loop.stop)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    loop.start()
    server.stop()
    close_context(ctx)
    return 0


def _serve_workers(args: argparse.Namespace, config, workers: int, token: str | None,
                   basic: tuple[str, str] | None) -> int:
    """A supervisor and ``workers`` processes on one port (``server/workers.py``). The store is opened
    here once (schema check, crash recovery) and closed before the workers fork: each opens its own."""
    from .errors import ConfigurationError
    from .server.app import open_store, serve_run_dir
    from .server.workers import Supervisor, bind_listening

    try:
        store = open_store(config, args.store)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    location, counts = store.location, store.counts()
    # While the server runs, its workers never take the folder store for theirs alone (they would
    # reconcile it again, which start-up just did): this process keeps it open.
    keep_open = store.detach_lock()
    store.close()
    with contextlib.ExitStack() as cleanup:  # undone in reverse, on every return below
        if keep_open is not None:
            cleanup.callback(keep_open.close)
        try:
            sockets = bind_listening(args.port, args.host)
        except OSError as exc:
            print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        for sock in sockets:
            cleanup.callback(sock.close)
        # Only once the address is ours: the run folder is emptied when made, and a server that already
        # holds this address (whose start this one would fail) keeps its own.
        try:
            run_dir = serve_run_dir(args.host, sockets[0].getsockname()[1])
        except ConfigurationError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        cleanup.callback(shutil.rmtree, run_dir, ignore_errors=True)
        # Metrics of every worker in one /metrics (prometheus_client's multiprocess mode): a folder they
        # all write, inside the run folder unless the user gave one.
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            metrics_dir = run_dir / "metrics"
            metrics_dir.mkdir(mode=0o700)
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
            cleanup.callback(os.environ.pop, "PROMETHEUS_MULTIPROC_DIR", None)
        from prometheus_client.multiprocess import mark_process_dead

        def worker_main(index: int, counts_of_workers, ready) -> int:
            return _run_worker(args, config, token, basic, run_dir, sockets, counts_of_workers, index, ready)

        supervisor = Supervisor(workers, worker_main, on_worker_exit=mark_process_dead)
        if not supervisor.start():
            if supervisor.stop_asked:
                return 0  # SIGTERM or Ctrl-C while a worker was still starting: a clean stop
            print("error: the server's workers did not start (see the log above)", file=sys.stderr)
            return 1
        from .server.app import url_path_join

        root_path = url_path_join("/", config.root, "/")
        _print_serving(args, config, location, counts, root_path, url_path_join("/", config.wado_root), workers)
        return supervisor.run()


def _run_worker(args: argparse.Namespace, config, token: str | None, basic: tuple[str, str] | None, run_dir,
                sockets, counts, index: int, ready) -> int:
    """One worker process: its own store and application, serving the shared sockets until SIGTERM."""
    import tornado.ioloop

    from .server.app import close_context, make_app, make_http_server
    from .server.workers import watch_parent

    # The worklist's subscribers hear that the server started from its first worker only (PS3.4 CC.2.4.3).
    app = make_app(args.store, config, auth_token=token, basic_auth=basic, shared_dir=run_dir, announce_start=index == 0)
    server = make_http_server(app, config)
    server.accept_balanced(sockets, counts, index)
    loop = tornado.ioloop.IOLoop.current()

    def stop(*_: object) -> None:
        loop.add_callback_from_signal(loop.stop)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    watch_parent(os.getppid(), lambda: loop.add_callback(loop.stop))
    ready()
    loop.start()
    server.stop()
    close_context(app.settings["dicomweb"])
    return 0


def _print_serving(args: argparse.Namespace, config, location: str, counts: dict[str, int], root_path: str,
                   wado_path: str, workers: int) -> None:
    processes = f", {workers} worker processes" if workers > 1 else ""
    print(f"dicomweb-nb serving {location} ({counts['studies']} studies, {counts['instances']} instances{processes})", flush=True)
    print(f"  DICOMweb: http://{args.host}:{args.port}{root_path}", flush=True)
    if config.enable_wado:
        print(f"  WADO-URI: http://{args.host}:{args.port}{wado_path}", flush=True)


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


def cmd_migrate(args: argparse.Namespace) -> int:
    from .store import StoreError
    from .store.migrate import MigrationError, MigrationFailed, migrate, open_source, open_target

    def usage(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 2

    if args.workers < 1:
        return usage(f"--workers must be at least 1, not {args.workers}")
    source_spec = (args.from_store, args.from_database, args.from_storage)
    target_spec = (args.to_store, args.to_database, args.to_storage)
    has_source, has_target = any(source_spec), any(target_spec)
    if args.database or args.storage:
        if has_source and has_target:
            return usage("--database/--storage name the team store on the side not given otherwise; "
                         "with both sides given, use --from-database/--from-storage or --to-database/--to-storage")
        if not has_source and not has_target:
            return usage("say which side --database/--storage are: "
                         "--from-store DIR (copy into them) or --to-store DIR (copy out of them)")
        if has_source:
            target_spec = (None, args.database, args.storage)
        else:
            source_spec = (None, args.database, args.storage)
    for side, (folder, database, storage) in (("source", source_spec), ("target", target_spec)):
        if not folder and not database and not storage:
            return usage(f"no {side}: give --{'from' if side == 'source' else 'to'}-store DIR, or a team store's "
                         "--database URL and --storage URL")
        if bool(database) != bool(storage):
            return usage(f"the {side} team store needs both a database URL and a storage location "
                         f"(got only {'the database' if database else 'the storage'})")
        if folder and database:
            return usage(f"the {side} is either a folder or a team store (database + storage), not both")
    try:
        source = open_source(source_spec[0], database=source_spec[1], storage=source_spec[2])
    except (StoreError, ValueError, OSError) as exc:
        return usage(f"cannot open the source: {exc}")
    try:
        try:
            target = open_target(target_spec[0], database=target_spec[1], storage=target_spec[2], group=args.group or None)
        except (StoreError, ValueError, OSError) as exc:
            return usage(f"cannot open the target: {exc}")
        try:
            report = migrate(source, target, verify=not args.no_verify, progress=not args.quiet, workers=args.workers)
        except MigrationError as exc:
            return usage(str(exc))
        except MigrationFailed as exc:
            print(exc.report)
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("error: interrupted; run the same command again to copy what is missing", file=sys.stderr)
            return 130
        except Exception as exc:  # noqa: BLE001 - a database or bucket gone mid-copy: a message, not a traceback
            print(f"error: the copy stopped: {type(exc).__name__}: {exc}\n"
                  "run the same command again to copy what is missing", file=sys.stderr)
            return 1
        finally:
            target.close()
    finally:
        source.close()
    print(report)
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
    parser = argparse.ArgumentParser(prog="dicomweb-nb", description="DICOMweb for Jupyter: serve, import, samples, migrate.")
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
    serve.add_argument("--workers", type=int, default=None, metavar="N",
                       help="server processes on the one port and store (default: the number of cores; 1 serves "
                       "from this process alone). A worker that dies is restarted.")
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

    mig = sub.add_parser(
        "migrate",
        help="copy a store into another: a folder into a team store (PostgreSQL + object storage), back, or any to any",
        description="Copy every instance, the servers added over REST and the finished jobs of a store into another, "
        "streamed, resumable (run it again after an interruption: instances already in the target are skipped) "
        "and verified (counts, and the sha256 of every blob). Examples: "
        "dicomweb-nb migrate --from-store .dicomweb --database postgresql://user@host/db --storage s3://bucket/prefix; "
        "dicomweb-nb migrate --to-store .dicomweb --database postgresql://user@host/db --storage s3://bucket/prefix")
    mig.add_argument("--from-store", metavar="DIR",
                     help="copy from this store folder (a workspace store, or the team store it names)")
    mig.add_argument("--to-store", metavar="DIR", help="copy into this store folder (made if missing)")
    mig.add_argument("--database", metavar="URL", help="index of the team store on the other side: postgresql://user@host/db")
    mig.add_argument("--storage", metavar="URL",
                     help="blob storage of the team store on the other side: s3://bucket/prefix or a folder")
    mig.add_argument("--from-database", metavar="URL", help="(team store to team store) index of the source")
    mig.add_argument("--from-storage", metavar="URL", help="(team store to team store) blob storage of the source")
    mig.add_argument("--to-database", metavar="URL", help="(team store to team store) index of the target")
    mig.add_argument("--to-storage", metavar="URL", help="(team store to team store) blob storage of the target")
    mig.add_argument("--group", help="Unix group of a target folder shared by several users (c.DicomWeb.store_group)")
    mig.add_argument("--workers", type=int, default=4, help="blobs read and written at once (default 4)")
    mig.add_argument("--no-verify", action="store_true", help="skip the final comparison of every blob's sha256")
    mig.add_argument("--quiet", action="store_true", help="no progress bars")
    mig.set_defaults(func=cmd_migrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
