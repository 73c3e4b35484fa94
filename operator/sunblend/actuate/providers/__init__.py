"""Node providers: who is asked for the nodes a plan wants (none, kwok, karpenter, clusterapi)."""
