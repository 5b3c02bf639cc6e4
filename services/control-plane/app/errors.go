package app

import "tenantbase/libs/problem"

// errorTable maps every domain error of the control plane to its problem.
var errorTable = problem.Table{}
