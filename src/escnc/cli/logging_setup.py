"""Logging for ``escnc serve``: stderr, optionally a size-rotated file, text or JSON lines.

Records may carry ESC-style tags (``extra={"tenant": ..., "deployment": ..., "vm": ...}``,
as the engine's event log lines do). The text format prints them as
``[tenant=t deployment=d vm=v]`` before the message; the JSON format (one object per
line: time, level, logger, message, the tags present, exception) is for log shippers.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from escnc.settings import Settings

TAGS = ("tenant", "deployment", "vm")
FORMATS = ("text", "json")


def _tags(record: logging.LogRecord) -> dict[str, str]:
    return {t: str(v) for t in TAGS if (v := getattr(record, t, None)) not in (None, "")}


def _iso(created: float) -> str:
    ms = int((created % 1) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{ms:03d}Z"


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        tags = _tags(record)
        if tags:
            prefix = "[" + " ".join(f"{k}={v}" for k, v in tags.items()) + "] "
            record = logging.makeLogRecord({**record.__dict__, "message": prefix + record.message})
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_tags(record),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def formatter(kind: str) -> logging.Formatter:
    if kind not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {kind!r}")
    return JsonFormatter() if kind == "json" else TextFormatter()


def configure(settings: Settings) -> list[logging.Handler]:
    """Install the handlers on the root logger (replacing earlier ones); returns them."""
    fmt = formatter(settings.log_format)
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if settings.log_file:
        path = Path(settings.log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.handlers.RotatingFileHandler(
            path, maxBytes=max(0, settings.log_max_bytes), backupCount=max(0, settings.log_backups),
            encoding="utf-8",
        ))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    root.setLevel(getattr(logging, settings.log_level.upper(), logging.INFO))
    return handlers
