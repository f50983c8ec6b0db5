"""Datasets: conformers with energies and forces, read from ANI/COMP6 HDF5, extended XYZ, or the
package's compact HDF5 format, in explicit units, with splits by molecule or by conformer.

:class:`DeviceDataset` keeps the data and every conformer's pair list on the device and builds
batches there without host synchronisation.

Inside the package every energy is in kcal/mol, every length in Å and every force a true force
(-dE/dR) in kcal/mol/Å; readers convert from the units and conventions they are told.
"""
from .batching import Batch, DeviceDataset
from .conformers import Conformers
from .formats import detect_format, load, read, read_ani_h5, read_xyz, save
from .splits import split
from .units import ENERGY_UNITS, LENGTH_UNITS

__all__ = ["Conformers", "DeviceDataset", "Batch", "read", "detect_format", "read_ani_h5", "read_xyz", "save", "load",
           "split", "ENERGY_UNITS", "LENGTH_UNITS"]
