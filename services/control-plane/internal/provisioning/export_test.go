package provisioning

// ScramVerifier exposes the verifier computation to the tests.
var ScramVerifier = scramVerifier
