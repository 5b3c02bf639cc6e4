package provisioning

// ScramVerifier exposes the verifier computation to the tests.
var ScramVerifier = scramVerifier

// LockPoolConfig exposes the lock connections' configuration to the tests.
var LockPoolConfig = lockPoolConfig
