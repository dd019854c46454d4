"""The Ascend NPU backend (pyACL): VDEC -> VPC -> static-AIPP model, frames kept on the device.

Imported only inside a worker process whose config says `backend = "ascend"`; `acl` itself is
imported when the backend loads, so a machine without the CANN toolkit gets a boot error that
says what to install. See docs/ascend.md.
"""

from edged.backends.ascend.backend import AscendBackend

__all__ = ["AscendBackend"]
