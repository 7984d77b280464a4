"""The parts the molecule enumerator (enumerate.py) assembles: ring scaffolds, fused rings, chains,
substituents, two-ended linkers and the bonds it refuses."""

# ring scaffolds and chains: (name, SMILES); substituents attach at any symmetry-unique atom bearing H
RINGS = (
    ("benzene", "c1ccccc1"), ("pyridine", "c1ccncc1"), ("pyrimidine", "c1cncnc1"), ("pyrazine", "c1cnccn1"),
    ("pyridazine", "c1ccnnc1"), ("pyrrole", "c1cc[nH]c1"), ("furan", "c1ccoc1"), ("thiophene", "c1ccsc1"),
    ("imidazole", "c1c[nH]cn1"), ("pyrazole", "c1cc[nH]n1"), ("oxazole", "c1cocn1"), ("isoxazole", "c1cnoc1"),
    ("thiazole", "c1cscn1"), ("triazole", "c1nc[nH]n1"), ("cyclopropane", "C1CC1"), ("cyclobutane", "C1CCC1"),
    ("cyclopentane", "C1CCCC1"), ("cyclohexane", "C1CCCCC1"), ("cyclohexene", "C1=CCCCC1"),
    ("piperidine", "C1CCNCC1"), ("piperazine", "C1CNCCN1"), ("morpholine", "C1COCCN1"),
    ("thiomorpholine", "C1CSCCN1"), ("pyrrolidine", "C1CCNC1"), ("azetidine", "C1CNC1"), ("oxetane", "C1COC1"),
    ("tetrahydrofuran", "C1CCOC1"), ("tetrahydropyran", "C1CCOCC1"), ("dioxane", "C1COCCO1"),
    ("tetrahydrothiophene", "C1CCSC1"), ("pyrrolidinone", "O=C1CCCN1"), ("piperidinone", "O=C1CCCCN1"),
    ("oxazolidinone", "O=C1NCCO1"), ("imidazolidinone", "O=C1NCCN1"), ("pyridone", "O=c1cccc[nH]1"),
)
FUSED = (
    ("naphthalene", "c1ccc2ccccc2c1"), ("indole", "c1ccc2[nH]ccc2c1"), ("benzofuran", "c1ccc2occc2c1"),
    ("benzothiophene", "c1ccc2sccc2c1"), ("benzimidazole", "c1ccc2[nH]cnc2c1"), ("benzoxazole", "c1ccc2ocnc2c1"),
    ("benzothiazole", "c1ccc2scnc2c1"), ("quinoline", "c1ccc2ncccc2c1"), ("isoquinoline", "c1ccc2cnccc2c1"),
    ("indane", "c1ccc2CCCc2c1"), ("tetralin", "c1ccc2CCCCc2c1"), ("purine", "c1ncc2[nH]cnc2n1"),
    ("benzodioxole", "c1ccc2OCOc2c1"), ("indazole", "c1ccc2[nH]ncc2c1"),
)
CHAINS = (
    ("methyl", "C"), ("ethyl", "CC"), ("propyl", "CCC"), ("isopropane", "CC(C)"), ("butane", "CCCC"),
    ("isobutane", "CC(C)C"), ("neopentane", "CC(C)(C)C"), ("pentane", "CCCCC"), ("isopentane", "CCC(C)C"),
    ("hexane", "CCCCCC"), ("isohexane", "CC(C)CCC"), ("ethene", "C=C"), ("propene", "C=CC"), ("ethyne", "C#C"),
)
# substituents: (name, SMILES), attached through atom 0 (which must bear an H in the SMILES as written)
SUBSTITUENTS = (
    ("F", "F"), ("Cl", "Cl"), ("OH", "O"), ("NH2", "N"), ("Me", "C"), ("Et", "CC"), ("OMe", "OC"),
    ("CF3", "C(F)(F)F"), ("CN", "C#N"), ("NO2", "[NH+](=O)[O-]"), ("COOH", "C(=O)O"), ("CONH2", "C(N)=O"),
    ("CHO", "C=O"), ("Ac", "C(C)=O"), ("COOMe", "C(=O)OC"), ("NHAc", "NC(C)=O"), ("NMe2", "N(C)C"),
    ("OCF3", "OC(F)(F)F"), ("CHF2", "C(F)F"), ("SH", "S"), ("SMe", "SC"), ("SO2Me", "S(C)(=O)=O"),
    ("SO2NH2", "S(N)(=O)=O"), ("SO3H", "S(=O)(=O)O"), ("PO3H2", "P(=O)(O)O"), ("PO3Me2", "P(=O)(OC)OC"),
    ("PO3Et2", "P(=O)(OCC)OCC"), ("OPO3H2", "OP(=O)(O)O"), ("OPO3Me2", "OP(=O)(OC)OC"), ("POMe2", "P(C)(C)=O"),
    ("PSOMe2", "P(=S)(OC)OC"), ("CH2OH", "CO"), ("CH2NH2", "CN"), ("CH2Cl", "CCl"),
)
# two-ended linkers: (name, SMILES, head atom, tail atom); both orientations are used
LINKERS = (
    ("bond", "", 0, 0), ("CH2", "C", 0, 0), ("C2H4", "CC", 0, 1), ("O", "O", 0, 0), ("NH", "N", 0, 0),
    ("S", "S", 0, 0), ("CO", "C=O", 0, 0), ("amide", "C(=O)N", 0, 2), ("ester", "C(=O)O", 0, 2),
    ("sulfonamide", "S(=O)(=O)N", 0, 3), ("sulfone", "S(=O)=O", 0, 0), ("urea", "NC(=O)N", 0, 3),
    ("carbamate", "OC(=O)N", 0, 3), ("CH2O", "CO", 0, 1), ("CH2NH", "CN", 0, 1), ("vinylene", "C=C", 0, 1),
    ("ethynylene", "C#C", 0, 1), ("phosphate", "OP(=O)(O)O", 0, 4), ("CH2amide", "CC(=O)N", 0, 3),
)
# assembled bonds that are unstable or not drug-like (g2 and curated molecules are exempt)
FORBIDDEN = (
    "[#8]-[#8]", "[#7,#8,#15,#16]-[F,Cl]", "[#7;!a]-[#7;!a]", "[#8;!a;!$([O-])]-[#7;!a;!$([N+](=O)[O-])]",
    "[#7,#8,#15,#16]-[N+](=O)[O-]", "[#16;X2]-[#8,#7;!a]", "[#16]-[#16]", "[#15]-[#15]", "[#15]-[#7,#16]",
    "[#6X4](-Cl)-[#7,#8,#16]", "[#6X4;H2](-F)-[#7,#8,#16]", "[#7,#8,#16]-!@[#6X4]-[#7,#8,#16]",
    "[CX3]=[CX3]-[OX2H,NX3H1,NX3H2]", "[n]-[#7,#8,#15,F,Cl]", "[n]-[#16X2]", "C#C-[!#6]",
)
