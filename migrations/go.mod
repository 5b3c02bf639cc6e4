module tenantbase/migrations

go 1.26.8
