"""Fetch observations read from MuJoCo's arrays by precomputed index: the same numbers, fewer Python calls.

gymnasium-robotics assembles every Fetch observation by name: each robot joint through its own
`get_joint_qpos`/`get_joint_qvel` call (a name lookup and a copy each, ~15 calls per step), each site
through `mj_name2id`, and a fresh Jacobian per velocity. `install` replaces the env's `_get_obs` on that
one instance with `FetchObservation`, which resolves names and indices once and then applies the same
floating-point operations in the same order (copies, `jac @ qvel`, `* dt`, subtraction, `mat2euler`), so
observations, rewards and infos are bitwise equal to the original (tests/test_fast_path.py steps both on
real episodes). Nothing is stored in the env's own state, so checkpoints are the same with or without it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium_robotics.utils import rotations


class FetchObservation:
    """A Fetch env's `_get_obs`, reading qpos/qvel/site arrays at indices resolved once."""

    def __init__(self, env: Any) -> None:
        model = env.model
        self.env, self.data, self.model = env, env.data, model
        self.has_object = bool(env.has_object)
        site = lambda name: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, name)  # noqa: E731
        self.grip = site("robot0:grip")
        self.obj = site("object0") if self.has_object else -1
        # robot_get_obs: joints named robot*, in model order; the gripper is the last two (1-dof each)
        robot = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n)
                 for n in env._model_names.joint_names if n.startswith("robot")]
        fingers = robot[-2:]
        if len(fingers) != 2 or any(model.jnt_type[j] not in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE)
                                    for j in fingers):
            raise ValueError("FetchObservation: the last two robot joints are not 1-dof hinge/slide joints")
        self.finger_qpos = np.array([model.jnt_qposadr[j] for j in fingers])
        self.finger_qvel = np.array([model.jnt_dofadr[j] for j in fingers])
        self.jacp = np.zeros((3, model.nv))
        self.jacr = np.zeros((3, model.nv))

    def _velp(self, site_id: int) -> np.ndarray:
        mujoco.mj_jacSite(self.model, self.data, self.jacp, None, site_id)
        return self.jacp @ self.data.qvel

    def __call__(self) -> dict[str, np.ndarray]:
        env, data = self.env, self.data
        dt = env.n_substeps * self.model.opt.timestep
        grip_pos = data.site_xpos[self.grip]
        grip_velp = self._velp(self.grip) * dt
        gripper_state = data.qpos[self.finger_qpos]
        gripper_vel = data.qvel[self.finger_qvel] * dt
        if self.has_object:
            object_pos = data.site_xpos[self.obj]
            object_rot = rotations.mat2euler(data.site_xmat[self.obj].reshape(3, 3))
            object_velp = self._velp(self.obj) * dt
            mujoco.mj_jacSite(self.model, data, None, self.jacr, self.obj)
            object_velr = (self.jacr @ data.qvel) * dt
            object_rel_pos = object_pos - grip_pos
            object_velp -= grip_velp
            obs = np.concatenate([grip_pos, object_pos, object_rel_pos, gripper_state, object_rot, object_velp,
                                  object_velr, grip_velp, gripper_vel])
            achieved_goal = object_pos.copy()
        else:
            obs = np.concatenate([grip_pos, gripper_state, grip_velp, gripper_vel])
            achieved_goal = grip_pos.copy()
        return {"observation": obs, "achieved_goal": achieved_goal, "desired_goal": env.goal.copy()}


def install(env: gym.Env) -> bool:
    """Give a MuJoCo Fetch env (under any wrappers) the indexed `_get_obs`; False (unchanged) for other envs."""
    from gymnasium_robotics.envs.fetch.fetch_env import MujocoFetchEnv

    base = env.unwrapped
    if not isinstance(base, MujocoFetchEnv) or type(base).generate_mujoco_observations is not \
            MujocoFetchEnv.generate_mujoco_observations or type(base)._get_obs is not MujocoFetchEnv._get_obs:
        return False  # a subclass with its own observation: leave it alone
    base._get_obs = FetchObservation(base)
    return True
