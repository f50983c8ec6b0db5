"""Units: conversion factors to the package's internal units, kcal/mol and Å."""
from __future__ import annotations

HARTREE_IN_KCAL_PER_MOL = 627.5094740631
HARTREE_IN_EV = 27.211386245988

#: kcal/mol per unit of energy.
ENERGY_UNITS = {
    "kcal/mol": 1.0,
    "hartree": HARTREE_IN_KCAL_PER_MOL,
    "ev": HARTREE_IN_KCAL_PER_MOL / HARTREE_IN_EV,
    "kj/mol": 1.0 / 4.184,
}

#: Å per unit of length.
LENGTH_UNITS = {"angstrom": 1.0, "bohr": 0.529177210903}


def energy_factor(unit: str) -> float:
    """kcal/mol per ``unit`` (case-insensitive: kcal/mol, hartree, eV, kJ/mol)."""
    return _lookup("energy_unit", unit, ENERGY_UNITS)


def length_factor(unit: str) -> float:
    """Å per ``unit`` (angstrom or bohr)."""
    return _lookup("length_unit", unit, LENGTH_UNITS)


def _lookup(name: str, unit: str, table: dict[str, float]) -> float:
    if not isinstance(unit, str) or unit.lower() not in table:
        raise ValueError(f"{name} must be one of {sorted(table)}, got {unit!r}")
    return table[unit.lower()]
