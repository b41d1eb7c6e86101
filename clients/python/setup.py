"""Runs generate_stubs.sh before the package is built, so installs carry the stubs."""

import os
import pathlib
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithStubs(build_py):
    def run(self):
        script = pathlib.Path(__file__).resolve().parent / "generate_stubs.sh"
        subprocess.run(["bash", str(script)], check=True,
                       env={**os.environ, "PYTHON": os.environ.get("PYTHON", sys.executable)})
        # The stubs are new packages: look for packages again now that they exist.
        self.distribution.packages = sorted(
            set(self.distribution.packages or []) | set(self._generated_packages()))
        self.packages = self.distribution.packages
        super().run()

    @staticmethod
    def _generated_packages():
        root = pathlib.Path(__file__).resolve().parent
        for init in (root / "gistmem_client" / "_generated").rglob("__init__.py"):
            yield ".".join(init.parent.relative_to(root).parts)


setup(cmdclass={"build_py": BuildWithStubs})
