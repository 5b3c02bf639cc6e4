package provisioning

// ScramVerifier exposes the verifier computation to the tests.
var ScramVerifier = scramVerifier

// LockConnConfig exposes the lock connections' configuration to the tests.
var LockConnConfig = lockConnConfig
