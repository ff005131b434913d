"""What runs inside a machine of an OS image built by ``sdc image build-debian``: the init
(:mod:`agents.guest.sdc_init`, pid 1) and the ``mdata-*`` tools (``mdata-tool``, over
:mod:`agents.backends.linux.mdata_client`). Standard library only: the image has
python3-minimal and no package of ours, so these files are copied into it as they are."""
