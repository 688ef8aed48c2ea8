import os

# No hub is reachable from the test machines; without this, datasets pings it even for local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_UPDATE_DOWNLOAD_COUNTS", "false")
