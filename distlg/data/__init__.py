"""The data room: signals and the path from a source file to training batches.

``signal`` (the ``Signal`` and ``SignalInfo`` types) -> ``sources`` (one reader per kind of
source file) -> ``degrade`` (the downstream tasks' inputs: downsampled, noisy, a sinogram) ->
``ingest`` (source into a chunked Zarr store, resumable) -> ``store`` (stores,
``open_signal``; ``integrity``: every chunk written and checksummed, a damaged one named;
``remote`` reads them from http(s):// and s3:// URLs and writes them to s3://, ``bounded``
caps each answer)
-> ``draws`` (counter-based sample positions, ``Batch``, the ``Sampler`` protocol) ->
``resident`` (a shard's region in memory) / ``stream`` (streamed chunk by chunk) -> ``sampler``
(``make_sampler`` picks one); ``pack`` writes a store's chunks as per-worker tar
shards and reads them back for the streaming sampler.

It may import: ``distlg.errors``, ``distlg.geometry``, ``distlg.defaults``,
``distlg.staging`` and ``distlg.outputs``; numpy, zarr and the decoders; fsspec, aiohttp, s3fs
and botocore (in ``remote``, once a URL is opened); webdataset and tqdm (in ``pack``); torch in
the samplers only (to hand out tensors). It never imports torch.distributed or accelerate, nor
the model (``distlg.nn``), model directories, rendering or training. The store side (signal, store,
remote, ingest, sources) never imports torch at all.
"""
