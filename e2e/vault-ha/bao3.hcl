# OpenBao node bao3 of the three-node Raft cluster used by run.sh (test only:
# plain HTTP inside a private docker network, ports published on 127.0.0.1).
storage "raft" {
  path                   = "/bao/data"
  node_id                = "bao3"
  performance_multiplier = 1
  retry_join {
    leader_api_addr = "http://bao1:8200"
  }
  retry_join {
    leader_api_addr = "http://bao2:8200"
  }
  retry_join {
    leader_api_addr = "http://bao3:8200"
  }
}

listener "tcp" {
  address         = "0.0.0.0:8200"
  cluster_address = "0.0.0.0:8201"
  tls_disable     = true
}

api_addr      = "http://bao3:8200"
cluster_addr  = "http://bao3:8201"
disable_mlock = true
ui            = false
