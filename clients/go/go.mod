module github.com/redis-infer/redis-infer/clients/go

go 1.19
