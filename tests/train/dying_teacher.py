"""A teacher for the label-pool tests (`dying_teacher:make`): its calculator ends the process it runs in, as the
out-of-memory killer or a crash in a teacher's native code would."""

import os

from ase.calculators.calculator import Calculator


class _Dies(Calculator):
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        os._exit(9)


def make():
    return _Dies()
