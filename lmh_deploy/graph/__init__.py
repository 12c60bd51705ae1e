"""The DeployGraph stage: :mod:`.schema` (the typed graph and its one serializer), :mod:`.fold`
(trained model -> DeployGraph), :mod:`.interpret` (the reference interpreter and its back-ends)."""
