"""Runs a Python script under a seccomp allow list, as systemd's `SystemCallFilter=` with
`SystemCallErrorNumber=EPERM` would: `python3 syscall_filter.py ALLOWED SITE SCRIPT ARGS...`.

ALLOWED is a file of system call names, one a line; every other call fails with EPERM. Runs
under Debian's python3 (which has libseccomp's `seccomp` module); SITE (a site-packages folder
of the same Python version) is added to the path before SCRIPT runs in this same process.
"""

from __future__ import annotations

import errno
import runpy
import site
import sys

import seccomp  # Debian's python3-seccomp


def main() -> None:
    allowed_file, site_dir, script = sys.argv[1:4]
    names = [line.strip() for line in open(allowed_file) if line.strip()]
    rules = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
    for name in names:
        try:
            rules.add_rule(seccomp.ALLOW, name)
        except (RuntimeError, ValueError):
            pass  # a call this architecture does not have
    rules.load()
    site.addsitedir(site_dir)
    sys.argv = sys.argv[3:]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
