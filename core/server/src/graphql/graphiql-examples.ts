/**
 * The operations GraphiQL opens with, one tab each: the README's walkthrough, to run in order.
 * Ids a step needs come from an earlier step; its variables name which (`"<host.id from tab 3>"`).
 */

/** One GraphiQL tab: an operation and its variables (JSON). */
export interface GraphiqlExample {
  readonly query: string;
  readonly variables?: string;
}

const ERROR_FIELDS = `    ... on Error {
      code
      message
      field
      value
    }`;

/** The walkthrough's tabs, in the order to run them. */
export const GRAPHIQL_EXAMPLES: readonly GraphiqlExample[] = [
  {
    query: `# Welcome to Gatehouse. First put your
# token in Headers (below):
#   {"Authorization": "Bearer gh_..."}
# (an admin token is printed on the first
# start), then run the tabs 1 to 9 in
# order. Docs (top left) describes every
# type, field and argument.
#
# 1. Who you are.
query Me {
  me {
    name
    role
  }
}
`,
  },
  {
    query: `# 2. An IP pool on the NAT bridge br-nat: NICs on br-nat get addresses from it.
# Network, broadcast and gateway addresses are reserved automatically.
mutation CreatePool {
  createIpPool(
    input: {
      name: "nat-pool-1"
      kind: PRIVATE
      network: "br-nat"
      start: "10.0.0.1"
      end: "10.0.0.254"
      netmask: "255.255.255.0"
      gateway: "10.0.0.254"
      dns: ["223.5.5.5", "8.8.8.8"]
    }
  ) {
    ... on CreateIpPoolPayload {
      pool {
        id
        subnet
        utilisation {
          size
          allocated
          reserved
          free
        }
      }
    }
${ERROR_FIELDS}
  }
}
`,
  },
  {
    query: `# 3. A host, with the public address its port forwards listen on.
# Copy host.id from the answer: tabs 4 and 8 need it.
mutation CreateHost {
  createHost(input: { name: "hv-1", backend: "linux", publicAddresses: ["203.0.113.10"] }) {
    ... on CreateHostPayload {
      host {
        id
        portRange {
          start
          end
        }
      }
    }
${ERROR_FIELDS}
  }
}
`,
  },
  {
    query: `# 4. An instance on that host with one NIC on br-nat: the NIC gets the lowest free address.
# Paste the host id (tab 3) into Variables below; copy instance.id for tabs 5, 7 and 9.
mutation CreateInstance($hostId: ID!) {
  createInstance(input: { hostId: $hostId, name: "vm-1", nics: [{ network: "br-nat" }] }) {
    ... on CreateInstancePayload {
      instance {
        id
        nics {
          name
          mac
          addresses {
            cidr
            gateway
          }
        }
      }
    }
${ERROR_FIELDS}
  }
}
`,
    variables: '{ "hostId": "<host.id from tab 3>" }',
  },
  {
    query: `# 5. A second NIC for the instance (instance id from tab 4 in Variables).
mutation AddNic($instanceId: ID!) {
  addNic(input: { instanceId: $instanceId, network: "br-nat" }) {
    ... on AddNicPayload {
      added {
        nic {
          name
          mac
        }
        addresses {
          cidr
        }
      }
    }
${ERROR_FIELDS}
  }
}
`,
    variables: '{ "instanceId": "<instance.id from tab 4>" }',
  },
  {
    query: `# 6. Everything the instances hold now, and the latest audit entries.
query Instances {
  instances(first: 10) {
    edges {
      node {
        name
        nics {
          name
          mac
          addresses {
            cidr
            kind
          }
        }
      }
    }
  }
  auditLog(first: 5) {
    edges {
      node {
        at
        action
        objectType
        objectId
      }
    }
  }
}
`,
  },
  {
    query: `# 7. SSH of the instance on host port 10022 (instance id from tab 4 in Variables).
# PORT_CONFLICT when 10022/tcp is already forwarded on the host.
mutation CreatePortForward($instanceId: ID!) {
  createPortForward(input: { instanceId: $instanceId, protocol: TCP, hostPort: "10022", targetPort: "22" }) {
    ... on CreatePortForwardPayload {
      portForward {
        hostPorts {
          start
          end
        }
        targetAddress
        status
      }
    }
${ERROR_FIELDS}
  }
}
`,
    variables: '{ "instanceId": "<instance.id from tab 4>" }',
  },
  {
    query: `# 8. What the host's agent must apply, and what the agent last reported
# (host id from tab 3 in Variables). Objects stay PENDING until an agent applies them.
query HostState($hostId: ID!) {
  hostDesiredState(hostId: $hostId) {
    revision
    document
  }
  host(id: $hostId) {
    desiredRevision
    agent {
      online
      appliedRevision
      lastError
    }
  }
}
`,
    variables: '{ "hostId": "<host.id from tab 3>" }',
  },
  {
    query: `# 9. A firewall rule: web and SSH in from anywhere (instance id from tab 4 in Variables).
mutation AddFirewallRule($instanceId: ID!) {
  addFirewallRule(input: { instanceId: $instanceId, direction: INBOUND, protocol: TCP, ports: "22,80,443,8000-9000", action: ALLOW }) {
    ... on AddFirewallRulePayload {
      rule {
        id
        ports {
          start
          end
        }
        priority
        status
      }
    }
${ERROR_FIELDS}
  }
}
`,
    variables: '{ "instanceId": "<instance.id from tab 4>" }',
  },
];
