"""Readers of source files, one module per kind of source: each turns a path into a ``Source``
(what it becomes, and how to read it a slab at a time) for ``distlg.data.ingest``.

``base`` holds what they share (options, the error type, dtype and shape checks); ``video``,
``frames`` (folders of frames, TIFF stacks, single images), ``arrays`` (.npy, raw files),
``audio`` (.wav) and ``builtin`` (scikit-image's photographs) read one kind each. They import
numpy and their decoders only: never torch.
"""
