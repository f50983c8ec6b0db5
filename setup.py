"""Build script. The package is pure Python for now; the CUDA extension (csrc/) arrives with its own issue."""
from setuptools import setup

setup()
