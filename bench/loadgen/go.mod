module warriors/bench/loadgen

go 1.22
