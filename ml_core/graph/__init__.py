"""Graphs of the flow: CSR arrays, the user-item bipartite graph, top-k similarity graphs,
and the plain-torch neighbour sampler."""
