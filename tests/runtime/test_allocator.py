"""The worker fixes glibc's malloc thresholds (streamfeat.runtime.allocator)."""

from __future__ import annotations

import ctypes.util
import platform

import pytest

from streamfeat.runtime.allocator import fix_malloc_thresholds


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or ctypes.util.find_library("c") is None,
                    reason="glibc only (mallopt)")
def test_glibc_accepts_the_fixed_thresholds() -> None:
    assert fix_malloc_thresholds() is True
