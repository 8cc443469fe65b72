"""Guards around codec plugins that are unsafe to call from several threads at once.

pylibjpeg-openjpeg (JPEG 2000 decode and encode, 2.x up to at least 2.6) reports OpenJPEG's
info/warning messages through ``py_log``, which keeps its Python objects in C ``static``
variables and calls the ``logging`` module in between. Python may switch threads inside that
call, and a second thread entering ``py_log`` overwrites the statics, so the first one releases
the second one's string: a double free that crashes the process later, anywhere (measured:
three threads transcoding pydicom's 512x512 ``image_dfl.dcm`` to JPEG 2000 segfault within
30 rounds, every time; one thread never does).

The server decodes and encodes on a thread pool, and dask runs the client's lazy volumes on
threads, so every call into the extension module is serialised with one lock. It costs no
parallelism: the extension never releases the GIL while it works.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

_OPENJPEG_LOCK = threading.RLock()
_GUARDED = "_dicomweb_nb_serialised"


def _serialised(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        with _OPENJPEG_LOCK:
            return function(*args, **kwargs)

    setattr(call, _GUARDED, True)
    return call


def serialise_openjpeg() -> bool:
    """Make every call into pylibjpeg-openjpeg's extension module hold one process-wide lock.

    Idempotent; True when the module is installed (and now guarded). ``openjpeg.utils`` looks the
    functions up on the extension module at each call, so pydicom and pylibjpeg, however early
    they loaded their plugins, go through the guarded ones.
    """
    try:
        import _openjpeg  # type: ignore[import-not-found]
    except ImportError:
        return False
    for name in ("decode", "get_parameters", "encode_array", "encode_buffer"):
        function = getattr(_openjpeg, name, None)
        if function is not None and not getattr(function, _GUARDED, False):
            setattr(_openjpeg, name, _serialised(function))
    return True
