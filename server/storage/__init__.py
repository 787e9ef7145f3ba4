"""Shared storage: a recording's files in S3-compatible object storage, so that a
recording outlives the node that recorded it.

- `keys`: the one module that names objects (raw byte ranges while recording, the
  finalized files after).
- `objects`: the `ObjectStore` seam and its S3 implementation (aiobotocore).
- `shipper`: uploads every new byte range of live recordings' files every <= 2 s.
- `recordings`: what the other wings ask of the storage: rebuild a recording's folder
  from its objects, upload the finalized files, presign a download.

With no bucket configured (the default) none of this runs: files stay local only.
"""
