"""The model-directory room: a trained model on disk and its edits.

``manifest`` (what a directory describes, parsed once and checked) -> ``location`` (a local
folder or a URL, by key) -> ``shards`` (blocks of partitions as Zarr v3 shards, encoded a
whole shard at a time) -> ``base`` (``ModelDir``: what every format answers) -> ``quantize``
(float16 or int8 codes and their scales) -> ``weights`` (the local weights a shard at a time:
codes, scales, checksums) -> ``sharded``
and ``writer`` (format 2: a Zarr v3 group whose unit on disk is a shard; what distlg writes)
and ``files`` (format 1: one safetensors file per partition; still read) -> ``format``
(opening either; the rules every edit follows) -> ``output`` (where an edit writes), ``runs``
(a run directory's checkpoints), ``rewrite`` (a directory from another, whole or in part) ->
``export``, ``crop``, ``append`` (the files of new partitions for appended samples, trained by
``distlg.training.extend``).

It may import: ``distlg.nn``, ``distlg.geometry``, ``distlg.data.signal``, ``distlg.data.remote``
(URLs), ``distlg.staging`` and ``distlg.errors``; torch, safetensors, zarr, numcodecs and
google_crc32c.
It never imports training (the trainer writes its checkpoints through ``writer``),
distribution or rendering: it holds files, not a trainer.
"""
