"""Running artifacts: neighbour lists, structure checks, the Predictor, the ASE calculator, file screening."""
