"""One small module per host tool (btrfs, runc, tar, zfs, vmadm, imgadm): functions that build
argument lists, run them through :mod:`agents.backends.host.cmd` and parse what they print.
Never a shell string."""
