"""Builds the protobus package; the generated modules are made here.

protobus/protobus_pb2.py is generated from the repository's
proto/protobus.proto with protoc (Debian's protobuf-compiler) and
protobus/_version.py from proto/protobus_version.h, both into the build
directory only: generated code is never committed. PROTOBUS_PROTO_DIR names
another directory holding protobus.proto and protobus_version.h.
"""

import os
import re
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.environ.get("PROTOBUS_PROTO_DIR") or os.path.join(HERE, "..", "..", "proto")


def release_version():
    path = os.path.join(PROTO_DIR, "protobus_version.h")
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise SystemExit("protobus: cannot read %s (%s): build from the Protobus repository's "
                         "client/python, or set PROTOBUS_PROTO_DIR" % (path, e.strerror))
    parts = [re.search(r"#define PB_VERSION_%s (\d+)" % k, text) for k in
             ("MAJOR", "MINOR", "PATCH")]
    if not all(parts):
        raise SystemExit("protobus: %s has no PB_VERSION_MAJOR/MINOR/PATCH" % path)
    return ".".join(m.group(1) for m in parts)


class BuildWithProto(build_py):
    """build_py, plus protobus_pb2.py (protoc) and _version.py in the build directory."""

    def run(self):
        super().run()
        out = os.path.join(self.build_lib, "protobus")
        os.makedirs(out, exist_ok=True)
        protoc = shutil.which("protoc")
        if protoc is None:
            raise SystemExit("protobus: protoc not found: install Debian's protobuf-compiler")
        proto = os.path.join(PROTO_DIR, "protobus.proto")
        if not os.path.exists(proto):
            raise SystemExit("protobus: %s not found: build from the Protobus repository's "
                             "client/python, or set PROTOBUS_PROTO_DIR" % proto)
        subprocess.run([protoc, "-I" + PROTO_DIR, "--python_out=" + out, proto], check=True)
        with open(os.path.join(out, "_version.py"), "w") as f:
            f.write('__version__ = "%s"\n' % release_version())


setup(version=release_version(), cmdclass={"build_py": BuildWithProto})
