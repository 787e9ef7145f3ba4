"""The archive: catalogue, search, copies, BagIt export, consent afterwards."""
