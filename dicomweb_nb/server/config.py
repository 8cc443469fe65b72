"""Server configuration: one traitlets class, ``c.DicomWeb.*``, for the extension and ``dicomweb-nb serve``.

Option names follow the Orthanc DICOMweb plugin's (``Root`` -> ``root``, ``StudiesMetadata`` ->
``studies_metadata``, ...) so its users find their way; the README keeps the full table.
"""

from __future__ import annotations

from traitlets import Bool, Dict, Enum, Float, Int, List, TraitError, Unicode, validate
from traitlets.config import Configurable

METADATA_MODES = ("Full", "MainDicomTags", "Extrapolate")
OTHER_BINARY_MODES = ("BulkDataURI", "InlineBinary")

DEFAULT_SERIES_EXTRAPOLATED = [
    "BitsAllocated", "BitsStored", "Columns", "HighBit", "PhotometricInterpretation", "PixelSpacing",
    "PlanarConfiguration", "RescaleIntercept", "RescaleSlope", "Rows", "SOPClassUID", "SamplesPerPixel",
    "SliceThickness",
]


class DicomWeb(Configurable):
    """DICOMweb server options (Orthanc DICOMweb plugin equivalents in brackets)."""

    enable = Bool(True, help="Serve the DICOMweb API at all [Enable].").tag(config=True)
    root = Unicode("/dicom-web/", help="Root path of QIDO-RS, STOW-RS and WADO-RS, under Jupyter's base_url [Root].").tag(
        config=True
    )
    enable_wado = Bool(True, help="Serve WADO-URI [EnableWado].").tag(config=True)
    wado_root = Unicode("/wado", help="Path of WADO-URI, under Jupyter's base_url [WadoRoot].").tag(config=True)
    store_dir = Unicode(
        "",
        help="Folder of the workspace store; relative paths are taken from Jupyter's root_dir. "
        "Default: .dicomweb in the root dir. (Orthanc: StorageDirectory / IndexDirectory of the core.)",
    ).tag(config=True)
    database_url = Unicode(
        "",
        help="Index of a team store shared by several servers: postgresql://user@host:5432/db (password from "
        "PGPASSWORD or ~/.pgpass rather than the URL), or sqlite:////absolute/path/index.sqlite. Default: index.sqlite in "
        "the store folder. (Orthanc: the PostgreSQL plugin's index.)",
    ).tag(config=True)
    storage_url = Unicode(
        "",
        help="Where instances are kept: a folder, or object storage such as s3://bucket/prefix (credentials and "
        "endpoint from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL or a profile; gs:// and az:// "
        "likewise). Default: files/ in the store folder. (Orthanc: the S3 plugin's storage.)",
    ).tag(config=True)
    database_pool_size = Int(
        8,
        help="Connections each server process keeps open to a PostgreSQL index, at most (one more holds the "
        "process's session). N server processes on one database use N x (database_pool_size + 1) connections: "
        "keep that under the database's max_connections (100 by default). "
        "(Orthanc: the PostgreSQL plugin's IndexConnectionsCount.)",
    ).tag(config=True)
    replaced_blob_grace = Float(
        None, allow_none=True,
        help="Seconds the blob of a replaced or deleted instance stays readable for reads under way in other "
        "processes before it is removed. Default: 120 for object storage (an object cannot be held open), "
        "0 for a folder (an open file stays readable).",
    ).tag(config=True)
    store_group = Unicode(
        "",
        help="Unix group of several users sharing a local store folder: files are made group-readable and "
        "-writable (2770/0660) for that group instead of owner-only. Never world-readable.",
    ).tag(config=True)
    public_url = Unicode(
        "",
        help="Absolute URL of the DICOMweb root as clients see it (RetrieveURL, BulkDataURI, Content-Location), "
        "when neither the Host header nor Forwarded / X-Forwarded-* headers give it right [Host + Ssl; "
        "PublicRoot is its path: behind a reverse proxy mounting the root elsewhere, give the whole URL here, "
        "or let the proxy send X-Forwarded-Prefix].",
    ).tag(config=True)
    read_only = Bool(
        False,
        help="Refuse every request that would change the stored data, with a 403 saying so: STOW-RS, DELETE, "
        "worklist changes, PUT/DELETE /servers/{name} and /servers/{name}/retrieve (searches, retrieves and "
        "sending to remote servers go on) [Orthanc core ReadOnly, honoured by the plugin since 1.18].",
    ).tag(config=True)
    enable_performance_logs = Bool(
        False,
        help="Log one line per request (logger dicomweb_nb.performance): service, status, elapsed time, bytes "
        "and rate [EnablePerformanceLogs].",
    ).tag(config=True)
    other_binary_mode = Enum(
        OTHER_BINARY_MODES, "BulkDataURI",
        help="How binary attributes other than pixel data (VR OB, OD, OF, OL, OV, OW) appear in WADO-RS "
        "metadata: BulkDataURI (a URL to fetch them; default) or InlineBinary (base64 in the JSON) [OtherBinaryMode].",
    ).tag(config=True)
    studies_metadata = Enum(METADATA_MODES, "Full", help="How study-level WADO-RS metadata is produced [StudiesMetadata].").tag(
        config=True
    )
    series_metadata = Enum(METADATA_MODES, "Full", help="How series-level WADO-RS metadata is produced [SeriesMetadata].").tag(
        config=True
    )
    studies_metadata_extrapolated_tags = List(
        Unicode(), ["AcquisitionDate"], help="Tags added in Extrapolate mode at study level [StudiesMetadataExtrapolatedTags]."
    ).tag(config=True)
    series_metadata_extrapolated_tags = List(
        Unicode(),
        DEFAULT_SERIES_EXTRAPOLATED,
        help="Tags added in Extrapolate mode at series level [SeriesMetadataExtrapolatedTags].",
    ).tag(config=True)
    enable_metadata_cache = Bool(
        True,
        help="Keep the DICOM JSON of each instance computed at ingest and answer metadata from it "
        "(false re-reads the files on every request) [EnableMetadataCache].",
    ).tag(config=True)
    servers = Dict(
        {},
        help="Remote DICOMweb servers by name: {'name': {'Url': ..., 'Username': ..., 'Password': ..., "
        "'HttpHeaders': {...}, 'Timeout': 60}} or {'name': [url, user, password]} [Servers].",
    ).tag(config=True)
    servers_in_store = Bool(
        False, help="Keep servers added with PUT /servers/{name} in servers.json of the workspace store (mode 0600), "
        "or in the index of a team store (database_url/storage_url: shared by its servers), "
        "across restarts and visible to dw.connect('name') in notebooks; otherwise they last until the server stops "
        "[ServersInDatabase]. Servers of c.DicomWeb.servers are read-only over REST."
    ).tag(config=True)
    qido_case_sensitive = Bool(
        False, help="Match person names case-sensitively in QIDO-RS (Orthanc core: CaseSensitivePN)."
    ).tag(config=True)
    qido_max_results = Int(
        0, help="Most matches a QIDO-RS answer holds when the client gives no limit (0: unlimited); "
        "cut answers carry a Warning header (Orthanc core: LimitFindResults).",
    ).tag(config=True)
    duplicates = Enum(
        ("replace", "reject", "keep"), "replace",
        help="What STOW-RS does with a SOP Instance UID already stored: replace it, reject the new one "
        "(failure 0x0111), or keep the stored one (Orthanc core: OverwriteInstances).",
    ).tag(config=True)
    max_upload_size = Int(
        64 * 1024**3,
        help="Largest STOW-RS request body in bytes; larger ones get 413. The body is streamed to disk, never held in memory.",
    ).tag(config=True)
    cors_origins = List(
        Unicode(), [],
        help="Origins allowed to call the API from a browser (CORS), e.g. an OHIF viewer's; '*' for any.",
    ).tag(config=True)
    worker_threads = Int(4, help="Threads for disk, database and codec work, so the event loop never waits on them.").tag(
        config=True
    )
    cpu_processes = Int(
        -1,
        help="Processes doing the CPU-heavy work of requests (parsing uploads, rendering) beside the server's own: "
        "0 keeps it on the worker threads; -1 (default) picks one per core under Jupyter, whose server is one "
        "process, and 0 for `dicomweb-nb serve`, whose --workers use the cores.",
    ).tag(config=True)
    concurrent_jobs = Int(
        2,
        help="Jobs (asynchronous /stow and /retrieve transfers) run at once; the others wait, highest Priority first "
        "[ConcurrentJobs].",
    ).tag(config=True)
    jobs_history_size = Int(
        100, help="Finished jobs kept (in the store) for GET /jobs; older ones are forgotten [JobsHistorySize]."
    ).tag(config=True)
    request_timeout = Float(
        60.0, help="Seconds before a call to a remote DICOMweb server gives up (default of servers' Timeout)."
    ).tag(config=True)

    @validate("database_pool_size")
    def _valid_pool_size(self, proposal):
        if proposal["value"] < 1:
            raise TraitError(f"database_pool_size must be at least 1, not {proposal['value']}")
        return proposal["value"]

    @validate("replaced_blob_grace")
    def _valid_grace(self, proposal):
        if proposal["value"] is not None and proposal["value"] < 0:
            raise TraitError(f"replaced_blob_grace must be 0 or more seconds, not {proposal['value']}")
        return proposal["value"]

    @validate("root")
    def _valid_root(self, proposal):
        value = "/" + proposal["value"].strip("/") + "/"
        if value == "//":
            raise ValueError("root must not be empty")
        return value

    @validate("wado_root")
    def _valid_wado_root(self, proposal):
        return "/" + proposal["value"].strip("/")
