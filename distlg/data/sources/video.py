"""Video files (.mp4 .mkv .webm .mov .avi), decoded by PyAV into RGB frames: video (t, y, x)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from .base import IngestError, Source, SourceOptions, choose_kind, first_line, identity

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi")
ESTIMATE_SLACK = 0.1
"""How far short of a frame count estimated from the duration (no count listed) decoding may
fall before the file is taken as truncated (variable frame rates make estimates rough)."""


def open_video(path: Path, options: SourceOptions) -> Source:
    """A video file; its frame count is the container's estimate until it is decoded."""
    import av

    choose_kind(options.kind, ("video",), str(path))
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            seconds = float(stream.duration * stream.time_base) if stream.duration else \
                (container.duration or 0) / 1e6
            listed = stream.frames  # exact where the container lists its frames, else 0
            frames = listed or round(seconds * fps) or 1
            height, width = stream.codec_context.height, stream.codec_context.width
    except (av.error.FFmpegError, IndexError) as exc:
        raise IngestError(f"{path}: not a readable video ({first_line(exc) or 'no video stream'})") from None
    shape = (frames, height, width, 3)

    def slabs(start: int, rows: int) -> Iterator[np.ndarray]:
        buf, k, index = np.empty((rows, height, width, 3), np.uint8), 0, 0
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            try:
                for frame in container.decode(stream):
                    if index >= start:
                        if (frame.height, frame.width) != (height, width):
                            raise IngestError(f"{path}: frame {index} is {frame.width}x{frame.height}, "
                                              f"the first is {width}x{height}")
                        buf[k], k = frame.to_ndarray(format="rgb24"), k + 1
                        if k == rows:
                            yield buf
                            k = 0
                    index += 1
            except av.error.FFmpegError as exc:
                raise IngestError(f"{path}: decoding failed at frame {index} ({first_line(exc)})") from None
        if index < (listed or frames * (1 - ESTIMATE_SLACK)):
            raise IngestError(f"{path}: only {index} of the {frames} frames the container "
                              f"{'lists' if listed else 'announces by its duration'} decode; the "
                              "file is truncated or damaged")
        if k:
            yield buf[:k]

    return Source(str(path), path.stat().st_size, "video", shape, np.dtype(np.uint8), slabs,
                  identity(path), {"fps": fps} if fps else {})
